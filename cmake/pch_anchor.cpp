// Anchors the shared precompiled header (see cmake/pch.h).
