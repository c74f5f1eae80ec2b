using System.Text;
using System.Text.Json;
using FluentAssertions;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;
using Xunit;

namespace Patterns.Orchestration.Tests;

/// <summary>The instance record leaves empty fields out of its JSON, reads them back as empty, and still reads records written with them.</summary>
public sealed class InstanceRecordJsonTests
{
    [Fact]
    public void A_running_record_leaves_its_empty_fields_out_and_reads_back_the_same()
    {
        var record = new InstanceRecord { Id = "order-1", Type = "Order", Status = WorkflowStatus.Running, CreatedAt = new DateTimeOffset(2026, 12, 7, 15, 0, 0, TimeSpan.Zero), Incarnation = 42 };

        var bytes = WorkflowRuntime.Encode(record);
        var json = Encoding.UTF8.GetString(bytes.Span);
        var read = JsonSerializer.Deserialize(bytes.Span, OrchestrationJson.Default.InstanceRecord)!;

        json.Should().NotContain("null").And.NotContain("closed").And.NotContain("parentSeq").And.NotContain("next");
        read.Should().BeEquivalentTo(record);
    }

    [Fact]
    public void Set_fields_are_written_and_an_empty_next_input_stays_empty_not_null()
    {
        var record = new InstanceRecord
        {
            Id = "order-2", Type = "Order", Run = 3, Status = WorkflowStatus.Completed, CreatedAt = DateTimeOffset.UnixEpoch, ClosedAt = DateTimeOffset.UnixEpoch.AddSeconds(1),
            Incarnation = 7, CustomStatus = [1], Result = [2], Error = "e", ErrorType = "T", ParentId = "parent", ParentSeq = 5, NextInput = [],
        };

        var read = JsonSerializer.Deserialize(WorkflowRuntime.Encode(record).Span, OrchestrationJson.Default.InstanceRecord)!;

        read.Should().BeEquivalentTo(record);
        read.NextInput.Should().NotBeNull().And.BeEmpty(); // "continued as new with no input", not "nothing to start"
    }

    [Fact]
    public void A_record_written_with_explicit_nulls_is_still_read()
    {
        const string Old = """{"id":"order-3","type":"Order","run":1,"status":0,"created":"2026-12-07T15:00:00+00:00","inc":9,"closed":null,"custom":null,"result":null,"error":null,"errorType":null,"parent":null,"parentSeq":0,"next":null}""";

        var read = JsonSerializer.Deserialize(Encoding.UTF8.GetBytes(Old), OrchestrationJson.Default.InstanceRecord)!;

        read.Should().BeEquivalentTo(new InstanceRecord { Id = "order-3", Type = "Order", Run = 1, Status = WorkflowStatus.Running, CreatedAt = new DateTimeOffset(2026, 12, 7, 15, 0, 0, TimeSpan.Zero), Incarnation = 9 });
    }
}
