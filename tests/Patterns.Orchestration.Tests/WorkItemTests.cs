using System.Buffers;
using System.Text;
using Patterns.Orchestration.Engine;
using Patterns.Orchestration.Runtime;
using Patterns.Serialization;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// A work item's outcome, whether or not anyone asked for it before it came (its task is created only when asked for), and
/// payloads serialized with a buffer the thread keeps.
/// </summary>
public sealed class WorkItemTests
{
    [Fact]
    public async Task AnOutcomeThatCameBeforeAnyoneAsked_IsWhatDoneReports()
    {
        var plain = new ResumeItem();
        plain.Complete();
        (await plain.Done.WaitAsync(TestHost.Wait)).Should().BeNull();

        var withResult = new ResumeItem();
        withResult.Complete("result");
        (await withResult.Done.WaitAsync(TestHost.Wait)).Should().Be("result");

        var failed = new ResumeItem();
        failed.Fail(new InvalidOperationException("no"));
        await failed.Invoking(i => i.Done.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>().WithMessage("no");
    }

    [Fact]
    public async Task AnOutcomeThatCameAfterDoneWasAskedFor_CompletesThatTask()
    {
        var completed = new ResumeItem();
        var done = completed.Done;
        done.IsCompleted.Should().BeFalse();
        completed.Done.Should().BeSameAs(done);
        completed.Complete(42);
        (await done.WaitAsync(TestHost.Wait)).Should().Be(42);

        var failed = new ResumeItem();
        var failing = failed.Done;
        failed.Fail(new InvalidOperationException("no"));
        await failing.Invoking(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>();
    }

    [Fact]
    public async Task TheFirstOutcomeWins()
    {
        var completed = new ResumeItem();
        completed.Complete("first");
        completed.Fail(new InvalidOperationException("second"));
        completed.Complete("third");
        (await completed.Done.WaitAsync(TestHost.Wait)).Should().Be("first");

        var failed = new ResumeItem();
        _ = failed.Done;
        failed.Fail(new InvalidOperationException("first"));
        failed.Complete("second");
        await failed.Invoking(i => i.Done.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>().WithMessage("first");
    }

    [Fact]
    public async Task AnOutcomeRacingTheFirstAskForDone_IsNeverLost()
    {
        for (var round = 0; round < 500; round++)
        {
            var item = new ResumeItem();
            using var go = new Barrier(2);
            var asking = Task.Run(() =>
            {
                go.SignalAndWait(TestHost.Wait);
                return item.Done;
            });
            var settling = Task.Run(() =>
            {
                go.SignalAndWait(TestHost.Wait);
                item.Complete(round);
            });
            await settling.WaitAsync(TestHost.Wait);
            (await asking.WaitAsync(TestHost.Wait)).Should().Be(round); // Task.Run unwraps: this waits for Done itself
        }
    }

    [Fact]
    public void APayloadSerializedWhileAnotherIsBeingSerialized_OnTheSameThread_KeepsItsOwnBytes()
    {
        var serializer = new NestingSerializer();

        var outer = serializer.ToPayload(new Nested("outer", new Nested("inner", null)), typeof(Nested));
        var again = serializer.ToPayload(new Nested("alone", null), typeof(Nested));

        Encoding.UTF8.GetString(outer!).Should().Be("outer[inner[]]");
        Encoding.UTF8.GetString(again!).Should().Be("alone[]");
    }

    private sealed record Nested(string Name, Nested? Inner);

    /// <summary>Writes a value's name, then the payload of its inner value, serialized within (as a converter might).</summary>
    private sealed class NestingSerializer : IMessageSerializer
    {
        public string ContentType => "text/plain";

        public void Serialize(IBufferWriter<byte> writer, object value, Type type)
        {
            var nested = (Nested)value;
            writer.Write(Encoding.UTF8.GetBytes(nested.Name + "["));
            if (nested.Inner is not null)
            {
                writer.Write(this.ToPayload(nested.Inner, typeof(Nested)));
            }

            writer.Write("]"u8);
        }

        public object Deserialize(ReadOnlyMemory<byte> payload, Type type) => throw new NotSupportedException();
    }
}
