"""The delivery gate: reloadtrace's verdicts as an HTTP service for Argo Rollouts, Flagger and probes (``reloadtrace gate``)."""
