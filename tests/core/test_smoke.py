from jaejin.core.accounts import Role
from tests.support import sign_in


def test_a_coordinator_signs_in_and_sees_their_home(client, actors):
    sign_in(client, actors.person("a", Role.COORDINATOR))
    home = client.get("/")
    assert home.status_code == 200
    assert "Patients" in home.text
