"""The request pipeline between the API boundary and the providers: admit, call upstream, settle."""
