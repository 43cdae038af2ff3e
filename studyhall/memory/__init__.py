"""studyhall.memory"""
