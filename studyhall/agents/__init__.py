"""studyhall.agents"""
