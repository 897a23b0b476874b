"""Quick-look report of a finished series or run: what a scientist looks at first (hit rate, peaks, the summed
pattern, the strongest hit, and what a data policy kept), read from the files alone."""
