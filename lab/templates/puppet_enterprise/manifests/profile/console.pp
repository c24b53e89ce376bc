# Lab stand-in for PE's console profile: its run rewrites the RBAC certificate whitelist
# from the masters PuppetDB knows (so it must run after the PuppetDB run).
class puppet_enterprise::profile::console {
  exec { 'pelab console run latency':
    command   => '@INHOST@/bin/pelab-delay console_run',
    onlyif    => '@INHOST@/bin/pelab-delay --positive console_run',
    logoutput => true,
    timeout   => 3600,
  }
  -> exec { 'console rbac-certificate-whitelist':
    command   => '@INHOST@/bin/pelab-whitelist write console',
    unless    => '@INHOST@/bin/pelab-whitelist check console',
    logoutput => true,
  }
}
