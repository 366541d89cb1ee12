"""Pure values and arithmetic of the market data: no I/O, no threads, no clocks read here."""

__all__: list[str] = []
