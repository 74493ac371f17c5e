"""The delivery gate (``reloadtrace gate``): reloadtrace's verdicts over HTTP for Argo Rollouts, Flagger, probes."""
