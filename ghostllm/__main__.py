import sys

from ghostllm.cli import main

sys.exit(main())
