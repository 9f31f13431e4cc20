"""Training what the bundled world ships: stimnet (`stimnet`) and the DCGAN (`gan`). It sits above
`neurons` and `generators`: each needs both."""
