"""The actors of one sync run: Controller, Engine, REST fetcher, WS feed, DB writer."""
