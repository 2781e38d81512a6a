# Loaded by moto_server through PYTHONPATH when cloudsim starts it: one
# correction that makes moto's EC2 behave as EC2 documents. When an instance
# terminates, EC2 deletes the network interface it was launched with and its
# private addresses are free for the next instance; moto 5 keeps both, so a
# recreated VM could never get its address back ("IP already in use", a 500).
# If moto's internals differ from what this expects, nothing is changed and
# a line on stderr says so.
import sys
try:
    from moto.ec2.models.instances import Instance as _Instance

    _terminate = _Instance.terminate

    def _terminate_and_release(self):
        state = _terminate(self)
        try:
            for nic in list(self.nics.values()):
                if getattr(nic, "description", None) == "Primary network interface" and nic.id in self.ec2_backend.enis:
                    nic.delete()
            if self.subnet_id:
                subnet = self.ec2_backend.get_subnet(self.subnet_id)
                for ip in list(self._private_ips):
                    subnet.del_subnet_ip(ip)
        except Exception as e:
            sys.stderr.write("cloudsim: releasing the addresses of %s: %r\n" % (self.id, e))
        return state

    _Instance.terminate = _terminate_and_release
except Exception as e:
    sys.stderr.write("cloudsim: moto correction not applied: %r\n" % (e,))
