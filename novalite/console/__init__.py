"""The browser console: console auth tokens and the noVNC proxy (Nova's nova-novncproxy).

``tokens`` issues and checks the tokens the compute API hands out in console URLs;
``proxy`` is the ``console`` service: a websockify proxy that serves the noVNC page and
bridges its websocket to the guest's VNC server once the token checks out.
"""
