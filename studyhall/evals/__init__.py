"""studyhall.evals"""
