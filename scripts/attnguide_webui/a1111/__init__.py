"""The WebUI methods on plain Automatic1111: backend.install(session, method, params) on the pass's
router.Session. One file per method; router, step, space and forward are A1111's machinery."""
