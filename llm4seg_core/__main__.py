import sys

from llm4seg_core.cli import main

sys.exit(main())
