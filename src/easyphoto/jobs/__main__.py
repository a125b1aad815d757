"""``python -m easyphoto.jobs worker``: the job worker process the server starts."""

import sys

from .supervisor import worker_main

sys.exit(worker_main())
