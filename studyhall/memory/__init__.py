"""studyhall.memory: what the agents did, kept.

- ``store.EpisodicMemory``: episodic memory in chroma (embedded folder ``home/memory`` or a
  ``chroma run`` server via ``memory_url``): worked examples for the student
  (``similar_solved``), a kNN novelty score for RL (``novelty``), near-duplicate filtering
  of generated problems (``drop_near_duplicates``), ``add_trajectories``. See its docstring.
- ``episodes.Episode``: the record kept; ``embeddings``: the offline sentence-transformers
  model; ``client``: how the store is opened and shared by threads and processes;
  ``cli``: ``studyhall memory ...``.
- ``trajectory_store.TrajectoryStore``: every graph run in SQLite, for training and evals.
"""
