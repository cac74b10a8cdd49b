"""``sttwatch search``: the query language, what is indexed from results and transcript
files, finding the cue a hit is said in, and the command. The index itself is a store role
(sttwatch/store/search.py)."""
