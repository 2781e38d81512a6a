# Loaded by moto_server through PYTHONPATH when cloudsim starts it. Two
# additions to moto's EC2, so that the simulated cloud behaves as EC2 does:
#
# 1. When an instance terminates, EC2 deletes the network interface it was
#    launched with and its private addresses are free for the next instance;
#    moto 5 keeps both, so a recreated VM could never get its address back
#    ("IP already in use", a 500).
# 2. RebootInstances reboots the instance; moto changes nothing it reports,
#    so the simulator could not see it. The instance id is appended to the
#    file named by COMPLEAT_MOTO_REBOOTS, which the simulator reads and
#    reboots the VM.
#
# If moto's internals differ from what this expects, nothing is changed and a
# line on stderr says so.
import os
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

    _reboot = _Instance.reboot
    _reboots = os.environ.get("COMPLEAT_MOTO_REBOOTS")

    def _reboot_and_record(self):
        _reboot(self)
        if _reboots:
            try:
                with open(_reboots, "a") as f:
                    f.write(self.id + "\n")
            except Exception as e:
                sys.stderr.write("cloudsim: recording the reboot of %s: %r\n" % (self.id, e))

    _Instance.reboot = _reboot_and_record
except Exception as e:
    sys.stderr.write("cloudsim: moto additions not applied: %r\n" % (e,))
