"""qx_actors: LN Markets market-data sync engine built as a pykka actor system."""
