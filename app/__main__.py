"""``python -m llm4seg_app [PATH]``: start the LLM4Seg app."""

from llm4seg_app.main import main

raise SystemExit(main())
