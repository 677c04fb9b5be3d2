"""`onen review`: a page for operators, fed by the station's MQTT topics and its defect archive (read-only).

A process of its own (the optional `[review]` extra: Starlette + uvicorn); it never runs in the daemon.
"""
