"""Results as files: tables with provenance (:mod:`.tables`), the plot style (:mod:`.plots`)
and ``results/REPORT.md`` (:mod:`.report`)."""
