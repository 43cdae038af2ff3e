"""studyhall.training"""
