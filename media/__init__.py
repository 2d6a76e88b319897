"""The media path: aiortc legs, the RTP bridge between them, synthetic tracks.

Never imports ``server`` or ``storage``.
"""
