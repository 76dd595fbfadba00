"""``python -m initsuite.bench``: the benchmark (also ``initsuite bench``; the peak-memory children run this way)."""

from initsuite.bench import main

main()
