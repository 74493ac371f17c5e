"""``python -m infra.otelcol``: see :mod:`infra.otelcol.collector`."""

import sys

from infra.otelcol.collector import main

sys.exit(main())
