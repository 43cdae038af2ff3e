"""studyhall.chat: the terminal session people open first (``studyhall chat``)."""
