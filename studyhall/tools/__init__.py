"""studyhall.tools"""
