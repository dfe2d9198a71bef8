"""The peer benchmark: asyncjobs against other Python job queues (``./dev bench --peers``)."""
