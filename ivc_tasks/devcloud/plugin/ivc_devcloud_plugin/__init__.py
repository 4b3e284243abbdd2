"""Pieces of the ivc devcloud that run inside the cloud's virtualenv."""
