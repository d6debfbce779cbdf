from tests.conftest import model_name


def test_one_text_job(worker, client):
    job_id = client.submit("text-classification", "hello world", model=model_name("text-classification"))
    record = client.wait(job_id, timeout=60)
    print(record)
    assert record.state == "succeeded"
