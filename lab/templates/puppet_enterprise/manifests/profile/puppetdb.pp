# Lab stand-in for PE's PuppetDB profile.
#
# On the PuppetDB host (the primary in monolithic and extra-large installs): PE-PostgreSQL
# where it is this host's too, and pe-puppetdb (the real PuppetDB) running, and the
# certificate allow-list rewritten from the masters PuppetDB knows - so it must run after a
# new master's run - then PuppetDB refreshed, since it reads the list only at start (PE's
# file resource notifies Service['pe-puppetdb']).
#
# On a PE 2019.7+ compiler (PE Compiler declares this class): the compiler's own
# pe-puppetdb, against PE-PostgreSQL on the PuppetDB host with the compiler's certificate
# (pe-generations.md §6 [S6,S29]). Whether PostgreSQL lets it in is pg_ident.conf's
# business there: this run only starts the service, as PE's does.
class puppet_enterprise::profile::puppetdb {
  if $trusted['certname'] == '@PUPPETDB@' {
    exec { 'pelab puppetdb run latency':
      command   => '@INHOST@/bin/pelab-delay puppetdb_run',
      onlyif    => '@INHOST@/bin/pelab-delay --positive puppetdb_run',
      logoutput => true,
      timeout   => 3600,
    }
    -> exec { 'pe-puppetdb running':
      command => '@INHOST@/bin/pelab-pe-puppetdb start --wait',
      unless  => '@INHOST@/bin/pelab-pe-puppetdb status',
      timeout => 600,
    }
    -> exec { 'puppetdb certificate-whitelist':
      command   => '@INHOST@/bin/pelab-whitelist write puppetdb',
      unless    => '@INHOST@/bin/pelab-whitelist check puppetdb',
      logoutput => true,
    }
    ~> exec { 'pe-puppetdb reload':
      command     => '@INHOST@/bin/pelab-pe-puppetdb reload',
      refreshonly => true,
      timeout     => 600,
    }
    # PE-PostgreSQL where it is this host's too (split and monolithic installs; an
    # extra-large one keeps it on its own node, profile::database).
    if $trusted['certname'] == '@DATABASE@' {
      exec { 'pe-postgresql running':
        command => '@INHOST@/bin/pelab-pe-postgresql start',
        unless  => '@INHOST@/bin/pelab-pe-postgresql status',
        require => Exec['pelab puppetdb run latency'],
        before  => Exec['pe-puppetdb running'],
      }
    }
  } else {
    exec { 'pe-puppetdb on this compiler':
      command => '@INHOST@/bin/pelab-pe-puppetdb start',
      unless  => '@INHOST@/bin/pelab-pe-puppetdb status',
    }
  }
}
