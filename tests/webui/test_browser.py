"""The web UI in a real Chromium against a real engine with two libvirt
hosts: sign in and see the worker's charts of cluster use, create and start
a VM, put its host in maintenance and watch it move, see an event arrive
without a reload, make a custom role with the keyboard alone, take a VM
from a pool in the VM portal, sign out. Screenshots of the main pages are
written (build/screenshots by default)."""
import ovirtsdk4
import ovirtsdk4.types as types
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from harness.browser import screenshot, text_of
from harness.wait import wait_for

from .conftest import ADMIN_PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.root]


def sign_in(driver, ui, user, password):
    driver.get(ui + "/")
    driver.find_element(By.ID, "username").clear()
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # the answer is a new document (the form again, or the page asked for)
    wait_for(lambda: driver.find_element(By.TAG_NAME, "html").id != old.id
             and driver.execute_script("return document.readyState") == "complete", 30, what="the sign-in's answer")


def row_of(driver, name):
    for tr in driver.find_elements(By.CSS_SELECTOR, "#vm-rows tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        if cells and cells[0].text == name:
            return cells
    return None


def test_sign_in_refuses_a_wrong_password_then_shows_the_dashboard(ui_engine, browser):
    sign_in(browser, ui_engine.ui, "admin@internal", "not-the-password")
    assert "Wrong user name or password." in text_of(browser, ".message.error")
    sign_in(browser, ui_engine.ui, "admin@internal", ADMIN_PASSWORD)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".cards"), 30, what="the dashboard")
    wait_for(lambda: "2 / 2" in text_of(browser, ".cards"), 60, what="both hosts up on the dashboard")
    # the engine worker's first sample of the cluster's use, drawn as two charts
    charts = wait_for(lambda: browser.get(ui_engine.ui + "/") or browser.find_elements(By.CSS_SELECTOR, "svg.spark"),
                      60, what="the charts of cluster use", interval=1)
    assert len(charts) == 2
    label = charts[0].get_attribute("aria-label")
    assert label.startswith("Virtual CPUs of running VMs as a share of host CPUs from ") and " UTC: latest " in label
    assert charts[0].find_element(By.TAG_NAME, "title").get_attribute("textContent") == label
    assert charts[0].size["width"] > 100 and charts[0].find_element(By.TAG_NAME, "polyline")
    screenshot(browser, "dashboard")


def test_create_a_vm_with_the_form_and_start_it_without_reloading(ui_engine, browser):
    browser.get(ui_engine.ui + "/vms/new")
    browser.find_element(By.ID, "name").send_keys("web1")
    browser.find_element(By.ID, "memory_mib").send_keys("64")
    browser.find_element(By.ID, "ha").click()
    Select(browser.find_element(By.ID, "ha_priority")).select_by_visible_text("high")
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text.startswith("VM web1"), 60, what="the VM's page")
    assert "yes, priority high" in text_of(browser, "dl.props")
    browser.get(ui_engine.ui + "/vms")
    cells = wait_for(lambda: row_of(browser, "web1"), 30, what="web1 in the list")
    assert cells[1].text == "down"
    page = browser.find_element(By.TAG_NAME, "html")
    cells[-1].find_element(By.XPATH, ".//button[text()='Start']").click()
    # the job's progress shows in place, then the row turns up; the page itself never reloads
    wait_for(lambda: "Starting" in text_of(browser, "#messages") or "start" in text_of(browser, "#messages").lower(),
             30, what="the start job shown")
    wait_for(lambda: row_of(browser, "web1")[1].text == "up", 120, what="web1 up in the list")
    assert page.id == browser.find_element(By.TAG_NAME, "html").id
    screenshot(browser, "vms")


def test_maintenance_moves_the_vm_to_the_other_host_on_the_open_page(ui_engine, browser):
    browser.get(ui_engine.ui + "/vms")
    first = wait_for(lambda: row_of(browser, "web1"), 30, what="web1 in the list")[2].text
    assert first in ("h1", "h2")
    browser.get(f"{ui_engine.ui}/hosts/{ui_engine.setup['hosts'][first]}")
    page = browser.find_element(By.TAG_NAME, "html")
    assert "web1" in text_of(browser, "#host-live")
    browser.find_element(By.XPATH, "//button[text()='Maintenance']").click()
    # the host's page follows by itself: its state, then its VMs gone elsewhere
    wait_for(lambda: text_of(browser, "#host-live h1 .status") == "maintenance"
             and "No VM runs here." in text_of(browser, "#host-live"), 180, what=f"{first} in maintenance, empty")
    assert "done" in text_of(browser, "#messages")
    assert page.id == browser.find_element(By.TAG_NAME, "html").id
    screenshot(browser, "host-maintenance")
    browser.get(ui_engine.ui + "/vms")
    cells = wait_for(lambda: row_of(browser, "web1"), 30, what="web1 in the list")
    assert cells[1].text == "up" and cells[2].text not in ("", first)
    browser.get(f"{ui_engine.ui}/hosts/{ui_engine.setup['hosts'][first]}")
    browser.find_element(By.XPATH, "//button[text()='Activate']").click()
    wait_for(lambda: text_of(browser, "#host-live h1 .status") == "up", 120, what=f"{first} up again")


def test_an_event_appears_on_the_dashboard_without_a_reload(ui_engine, browser):
    browser.get(ui_engine.ui + "/")
    page = browser.find_element(By.TAG_NAME, "html")
    body = ('<event><description>Backup window opens in 5 minutes</description><severity>warning</severity>'
            '<origin>cron</origin><custom_id>4711</custom_id></event>')
    r = requests.post(ui_engine.url + "/events", data=body, auth=("admin@internal", ADMIN_PASSWORD),
                      headers={"Content-Type": "application/xml"}, timeout=30)
    assert r.status_code == 201, r.text
    wait_for(lambda: "Backup window opens in 5 minutes" in text_of(browser, "table.list"), 30,
             what="the event on the dashboard")
    assert page.id == browser.find_element(By.TAG_NAME, "html").id


def test_a_custom_role_is_made_with_the_keyboard_alone(ui_engine, browser):
    browser.get(ui_engine.ui + "/roles")
    name = browser.find_element(By.ID, "name")
    name.send_keys("Operator")
    browser.switch_to.active_element.send_keys(Keys.TAB, "starts and stops VMs")
    assert browser.switch_to.active_element.get_attribute("id") == "role-description"
    # from a permit's checkbox the next ones are a Tab away; Space ticks the one in focus
    browser.find_element(By.ID, "permit-login").send_keys(Keys.SPACE)
    browser.find_element(By.ID, "permit-run_vm").send_keys(Keys.SPACE)
    browser.switch_to.active_element.send_keys(Keys.TAB)
    browser.switch_to.active_element.send_keys(Keys.TAB, Keys.SPACE)
    ticked = browser.switch_to.active_element.get_attribute("id")
    assert ticked.startswith("permit-") and browser.switch_to.active_element.is_selected()
    name.send_keys(Keys.ENTER)      # a text field's Enter sends its form
    row = wait_for(lambda: [r for r in browser.find_elements(By.CSS_SELECTOR, "table.list tr")
                            if [td.text for td in r.find_elements(By.TAG_NAME, "td")][:1] == ["Operator"]],
                   30, what="the new role listed")[0]
    assert "3 permits" in row.text and "user" in row.text
    screenshot(browser, "roles")


def _admin_takes_pool_vms(ui_engine):
    """A manual pool of one VM from Blank, and UserRole on it for admin@internal (its VM portal shows it)."""
    conn = ovirtsdk4.Connection(url=ui_engine.url, username="admin@internal", password=ADMIN_PASSWORD)
    try:
        system = conn.system_service()
        pool = system.vm_pools_service().add(types.VmPool(
            name="desk", description="desktops", cluster=types.Cluster(name="Default"),
            template=types.Template(name="Blank"), size=1, type=types.VmPoolType.MANUAL))
        admin = next(u for u in system.users_service().list() if u.user_name.startswith("admin"))
        system.vm_pools_service().pool_service(pool.id).permissions_service().add(types.Permission(
            role=types.Role(name="UserRole"), user=types.User(id=admin.id)))
    finally:
        conn.close()


def test_a_vm_is_taken_from_a_pool_in_the_vm_portal(ui_engine, browser):
    _admin_takes_pool_vms(ui_engine)
    # the worker makes the pool's VM and its clean snapshot; then it is free
    wait_for(lambda: browser.get(ui_engine.ui + "/portal/") or "1 of 1" in text_of(browser, "main"), 180,
             what="the pool's VM free in the portal", interval=1)
    take = browser.find_element(By.XPATH, "//button[text()='Take a VM']")
    assert take.get_attribute("aria-label") == "Take a VM from pool desk"
    take.send_keys(Keys.ENTER)
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text.startswith("VM desk-1"), 60,
             what="the VM taken, on its page")
    screenshot(browser, "pool-vm")
    browser.get(ui_engine.ui + "/portal/")
    assert "desk-1" in text_of(browser, "#portal-rows") and "0 of 1" in text_of(browser, "main")


def test_signing_out_closes_the_pages(ui_engine, browser):
    browser.get(ui_engine.ui + "/vms")
    browser.find_element(By.XPATH, "//button[text()='Sign out']").click()
    wait_for(lambda: browser.find_elements(By.ID, "username"), 30, what="the sign-in page")
    browser.get(ui_engine.ui + "/vms")
    assert browser.find_elements(By.ID, "username") and not browser.find_elements(By.ID, "vm-rows")
    screenshot(browser, "signin")


CANVAS_INK = """
const c = document.querySelector('#screen canvas');
if (!c || !c.width) return 0;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let ink = 0;
for (let i = 0; i < d.length; i += 4) { if (d[i] + d[i + 1] + d[i + 2] > 60) ink++; }
return ink;
"""


def test_the_console_shows_the_guests_screen(ui_engine, browser):
    sign_in(browser, ui_engine.ui, "admin@internal", ADMIN_PASSWORD)
    browser.get(ui_engine.ui + "/vms")
    cells = wait_for(lambda: row_of(browser, "web1"), 30, what="web1 in the list")
    assert cells[1].text == "up"
    cells[-1].find_element(By.XPATH, ".//button[text()='Console']").click()
    wait_for(lambda: text_of(browser, "#console-status") == "Connected", 60, what="the console connected")
    # the guest's firmware writes to its screen: the canvas is not blank
    ink = wait_for(lambda: browser.execute_script(CANVAS_INK), 60, what="pixels on the console's canvas")
    assert ink > 100
    assert browser.find_element(By.ID, "screen").get_attribute("data-password") is None
    screenshot(browser, "console")


def test_a_snapshot_taken_on_the_vm_page_appears_there_by_itself(ui_engine, browser):
    browser.get(ui_engine.ui + "/vms")
    cells = wait_for(lambda: row_of(browser, "web1"), 30, what="web1 in the list")
    cells[0].find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: browser.find_elements(By.ID, "snapshot-description"), 30, what="the VM's page")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, "snapshot-description").send_keys("before the upgrade")
    browser.find_element(By.XPATH, "//button[text()='Take snapshot']").click()
    wait_for(lambda: "before the upgrade" in text_of(browser, "#vm-snapshots")
             and text_of(browser, "#vm-snapshots .status") == "ok", 120, what="the snapshot listed, ok")
    assert page.id == browser.find_element(By.TAG_NAME, "html").id
    screenshot(browser, "vm")
