"""One module per benchmark section, each with ``run(report, opts, workdir)``."""
