"""The inventory forms and a host's HA section in a real Chromium against a
real engine with two libvirt hosts: a storage domain added through a host
becomes active, a disk made on it gets its volume file, a network is
created with the keyboard alone and removed, a data center is edited, a VM
pool is created with the keyboard alone and listed, and a host's page
follows its hosted-engine HA record without a reload."""
import os
import sqlite3
from datetime import datetime, timezone

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from harness.browser import screenshot, text_of
from harness.wait import wait_for

from .conftest import ADMIN_PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.root]


def cells_of(driver, name):
    """The cells of the list's row whose first cell is `name` (None: no such row)."""
    for tr in driver.find_elements(By.CSS_SELECTOR, "table.list tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        if cells and cells[0].text == name:
            return [c.text for c in cells]
    return None


def listed(driver, url, name):
    """The row of `name` on the list at `url`, read again each call."""
    driver.get(url)
    return cells_of(driver, name)


def submit(driver):
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    wait_for(lambda: driver.find_element(By.TAG_NAME, "html").id != old.id
             and driver.execute_script("return document.readyState") == "complete", 30, what="the form's answer")


def test_sign_in_and_see_both_hosts_up(ui_engine, browser):
    browser.get(ui_engine.ui + "/hosts")
    browser.find_element(By.ID, "username").send_keys("admin@internal")
    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text.startswith("Hosts"), 30, what="the hosts page")
    wait_for(lambda: all((listed(browser, ui_engine.ui + "/hosts", h) or [""] * 4)[3] == "up" for h in ("h1", "h2")),
             90, what="both hosts up")


def test_a_storage_domain_added_with_the_form_becomes_active_and_takes_a_disk(ui_engine, browser):
    directory = os.path.join(ui_engine.root, "storage-fast")
    os.makedirs(directory)
    browser.get(ui_engine.ui + "/storagedomains")
    browser.find_element(By.LINK_TEXT, "New storage domain").click()
    browser.find_element(By.ID, "name").send_keys("fast")
    # refused first: the form comes back with the reason and the answers
    browser.find_element(By.ID, "path").send_keys("/etc")
    Select(browser.find_element(By.ID, "data_center")).select_by_visible_text("Default")
    Select(browser.find_element(By.ID, "host")).select_by_visible_text("h2 (up)")
    submit(browser)
    assert "is a system directory" in text_of(browser, ".message.error")
    assert browser.find_element(By.ID, "name").get_attribute("value") == "fast"
    assert Select(browser.find_element(By.ID, "host")).first_selected_option.text == "h2 (up)"
    screenshot(browser, "storage-domain-refused")
    browser.find_element(By.ID, "path").clear()
    browser.find_element(By.ID, "path").send_keys(directory)
    submit(browser)
    assert "/ui/storagedomains?job=" in browser.current_url
    # host h2 opens the directory as a libvirt pool (the worker's job); then the domain is active
    wait_for(lambda: (listed(browser, ui_engine.ui + "/storagedomains", "fast") or [""] * 4)[3] == "active", 120,
             what="storage domain fast active")
    screenshot(browser, "storage-domains")

    browser.find_element(By.LINK_TEXT, "fast").click()
    browser.find_element(By.LINK_TEXT, "New disk here").click()
    assert Select(browser.find_element(By.ID, "storage_domain")).first_selected_option.text.startswith("fast ")
    browser.find_element(By.ID, "name").send_keys("scratch")
    browser.find_element(By.ID, "size").send_keys("1")
    screenshot(browser, "disk-new")
    submit(browser)
    wait_for(lambda: (listed(browser, ui_engine.ui + "/disks", "scratch") or [""] * 3)[2] == "ok", 120,
             what="disk scratch ok")
    assert listed(browser, ui_engine.ui + "/disks", "scratch")[1:4] == ["1024 MiB", "ok", "fast"]
    # its volume is a real file in the domain's directory
    assert any(name.endswith(".qcow2") for name in os.listdir(directory)), os.listdir(directory)


def test_a_network_is_created_with_the_keyboard_alone_and_removed(ui_engine, browser):
    browser.get(ui_engine.ui + "/networks/new")
    browser.find_element(By.ID, "name").click()
    # name, data center (left as it is), description, VLAN, MTU; Enter submits
    ActionChains(browser).send_keys("backup", Keys.TAB, Keys.TAB, "nightly copies", Keys.TAB, "100", Keys.TAB,
                                    "9000").perform()
    old = browser.find_element(By.TAG_NAME, "html")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "html").id != old.id
             and browser.execute_script("return document.readyState") == "complete", 30, what="the network list")
    assert cells_of(browser, "backup") == ["backup", "Default", "100", "9000", "nightly copies"]
    browser.find_element(By.LINK_TEXT, "backup").click()
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.XPATH, "//button[text()='Remove']").click()
    alert = wait_for(lambda: browser.switch_to.alert, 10, what="the question before removing")
    assert alert.text == "Remove network backup?"
    alert.accept()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "html").id != old.id
             and browser.execute_script("return document.readyState") == "complete", 30, what="the network list")
    assert browser.current_url.endswith("/ui/networks") and cells_of(browser, "backup") is None


def test_a_data_center_is_edited_with_its_form(ui_engine, browser):
    browser.get(ui_engine.ui + "/datacenters")
    browser.find_element(By.LINK_TEXT, "Default").click()
    browser.find_element(By.LINK_TEXT, "Edit").click()
    assert browser.find_element(By.ID, "name").get_attribute("value") == "Default"
    browser.find_element(By.ID, "description").send_keys("the lab's")
    submit(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Data center Default"
    assert "the lab's" in text_of(browser, "dl.props")


def test_a_vm_pool_is_created_with_the_keyboard_alone_and_listed(ui_engine, browser):
    browser.get(ui_engine.ui + "/")
    browser.find_element(By.LINK_TEXT, "Pools").click()
    browser.find_element(By.LINK_TEXT, "New VM pool").click()
    browser.find_element(By.ID, "name").click()
    # name, template, cluster and type (left as they are), size, prestarted VMs, most per user, description
    ActionChains(browser).send_keys("desk", Keys.TAB, Keys.TAB, Keys.TAB, Keys.TAB, "2", Keys.TAB, "0", Keys.TAB,
                                    "1", Keys.TAB, "lab desktops").perform()
    screenshot(browser, "pool-new")
    old = browser.find_element(By.TAG_NAME, "html")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "html").id != old.id
             and browser.execute_script("return document.readyState") == "complete", 30, what="the pool list")
    assert browser.current_url.endswith("/ui/pools")
    row = cells_of(browser, "desk")
    assert row[:6] == ["desk", "lab desktops", "Default", "Blank", "automatic", "2"], row
    screenshot(browser, "pools")


def _publish_ha_record(root, address):
    """An HA record for the host at `address`, as the engine worker copies it
    from the hosts' etcd (this engine is told of no etcd, so its worker
    leaves the rows alone after its first cycle)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(os.path.join(root, "engine.db")) as db:
        db.execute("INSERT INTO ha_cluster (id, global_maintenance, updated, error) VALUES (1, 0, ?, NULL)", (now,))
        db.execute("INSERT INTO ha_hosts (host_id, hostname, address, ha_state, score, engine_vm_running, "
                   "engine_health, engine_detail, local_maintenance, agent_stopped, record_time, stale) "
                   "VALUES (1, 'h1.lab', ?, 'EngineUp', 3400, 1, 'good', 'Up', 0, 0, ?, 0)", (address, now))


def test_the_host_page_follows_its_ha_record_without_a_reload(ui_engine, browser):
    h1 = ui_engine.setup["hosts"]["h1"]
    browser.get(f"{ui_engine.ui}/hosts/{h1}")
    page = browser.find_element(By.TAG_NAME, "html")
    assert "HA: not configured" in text_of(browser, "#ha-host")
    _publish_ha_record(ui_engine.root, ui_engine.hosts[0].address)
    wait_for(lambda: "EngineUp" in text_of(browser, "#ha-host"), 30, what="the HA record on the host page")
    section = text_of(browser, "#ha-host")
    assert "Score\n3400" in section and "runs here" in section
    assert "hosted-engine --set-maintenance --mode=local" in section
    assert page.id == browser.find_element(By.TAG_NAME, "html").id
    screenshot(browser, "host-ha")
    browser.get(f"{ui_engine.ui}/hosts/{ui_engine.setup['hosts']['h2']}")
    assert "Not a hosted-engine host" in text_of(browser, "#ha-host")
