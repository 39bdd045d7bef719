"""The deployment on one machine (deploy/stack.py); configuration files beside it."""
