"""Jaejin: telemedicine follow-up platform for Korean medical institutions."""
