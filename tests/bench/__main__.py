"""`python -m tests.bench`: see tests/bench/run, which installs what it needs first."""

import sys

from tests.bench.bench import main

sys.exit(main())
