"""The scheduled self-improvement loop: collect, build data, train, evaluate, promote, record.

Left running, studyhall gets better and never worse: a candidate adapter replaces the
champion only when it beats it on a held-out dev set by a margin, with a paired
significance check. State lives in SQLite so a killed loop resumes the interrupted step.
"""
