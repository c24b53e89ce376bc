"""Component resources (`pe:index:<Name>`) that wire the providers' resources so that
ordering is declarative: a master enters the 8140 pool only after its code is synced, it
is classified, and PuppetDB and the console trust it; on removal the pool lets go first.
"""
