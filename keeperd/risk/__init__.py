"""Pure risk computation: no I/O, no clocks, no globals."""
