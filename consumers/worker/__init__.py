"""The stream worker: a Faust app whose agents decode, call the pure core and emit."""
