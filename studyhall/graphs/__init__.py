"""studyhall.graphs"""
