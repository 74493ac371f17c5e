"""The traffic simulator and the commands built on it, apart from the library a service imports.

``simulator`` runs deterministic multi-service traffic on the real OTel SDK and ``gateway/``'s own
handles and processor; ``scenarios`` holds ready-made scenarios; ``output`` writes a run to files;
``produce`` publishes record streams (a run, or files) to the topics; ``commands`` is the body of
``reloadtrace simulate`` and ``reloadtrace produce``. Nothing under ``gateway/`` imports this package.
"""
