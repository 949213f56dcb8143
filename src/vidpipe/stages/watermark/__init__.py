"""Watermark and logo removal (issue 17): what a mark is (`marks`), finding marks (`detect`), removing them."""
