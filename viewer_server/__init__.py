"""The continuous-zoom viewer's server: the image's state and tiles (app.py) and their HTTP face (server.py)."""
