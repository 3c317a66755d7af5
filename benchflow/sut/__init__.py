"""Systems under test: the server processes a trial or a job launches (plain or in
Apptainer), their readiness and teardown (:mod:`.servers`), the embedded servers
benchflow can start itself (:mod:`.embedded`), the CPUs they and the load
generator run on (:mod:`.placement`), and the endpoints of servers started as jobs
(:mod:`.endpoints`). Drivers may import this room.
"""
