using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using Patterns.Messaging;
using Patterns.PeerLinks.Wire;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Alone: the allocation listener sees the whole process, so no other test may allocate while it measures.</summary>
[CollectionDefinition(nameof(LargeObjectHeapCollection), DisableParallelization = true)]
public sealed class LargeObjectHeapCollection;

/// <summary>Messages of many chunks: byte-exact, no array on the large-object heap, and a clear error beyond the limit.</summary>
[Collection(nameof(LargeObjectHeapCollection))]
public sealed class PeerLinksLargeMessageTests
{
    private const int SixteenMiB = 16 * 1024 * 1024;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 120_000)]
    public async Task LargeMessage_SixteenMiB_ArrivesByteExact_WithNoLargeObjectHeapArrayInTheTransport()
    {
        await using var mesh = await Mesh.StartAsync(2);
        var queue = $"large.exact-{Guid.NewGuid():N}";
        var payload = new byte[SixteenMiB];
        new Random(14).NextBytes(payload);
        var got = new TaskCompletionSource<(long Length, bool Equal, int Segments, int LargestSegment)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await mesh.Nodes[1].SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
            (e, _) =>
            {
                // Compared segment by segment: reading Payload would copy the sequence into one 16 MiB array.
                var sequence = e.PayloadSequence;
                var (offset, equal, segments, largest) = (0, true, 0, 0);
                foreach (var segment in sequence)
                {
                    equal &= offset + segment.Length <= payload.Length && segment.Span.SequenceEqual(payload.AsSpan(offset, segment.Length));
                    offset += segment.Length;
                    segments++;
                    largest = Math.Max(largest, segment.Length);
                }

                got.TrySetResult((sequence.Length, equal, segments, largest));
                return new(Settlement.Ack);
            });

        // Warm up the link with one large message, so that lazily grown pools and buffers are in place before measuring.
        await mesh.Nodes[0].SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "blob", Payload = payload });
        (await got.Task.WaitAsync(Bound)).Equal.Should().BeTrue();
        got = new(TaskCreationOptions.RunContinuationsAsynchronously);

        using var listener = new LargeAllocationListener();
        listener.Proof(); // the listener must see a large allocation, or seeing none would prove nothing
        await listener.Live.WaitAsync(Bound);
        var before = listener.Count;

        await mesh.Nodes[0].SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "blob", Payload = payload });
        var received = await got.Task.WaitAsync(Bound);

        var during = listener.Allocations.Skip(before).ToList();
        received.Length.Should().Be(SixteenMiB);
        received.Equal.Should().BeTrue("the 16 MiB payload must arrive byte for byte");
        during.Should().BeEmpty("the transport must not allocate on the large-object heap for a large message");
        received.Segments.Should().Be(SixteenMiB / SegmentChain.MaxSegmentBytes);
        received.LargestSegment.Should().Be(SegmentChain.MaxSegmentBytes);
    }

    [Fact(Timeout = 120_000)]
    public async Task MessageOverTheMaximum_FailsAtTheSender_NamingTheOption()
    {
        await using var mesh = await Mesh.StartAsync(2, (_, o) => o.MaxMessageBytes = 1024 * 1024);
        var queue = $"large.limit-{Guid.NewGuid():N}";
        var handled = 0;
        await mesh.Nodes[1].SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (_, _) =>
        {
            Interlocked.Increment(ref handled);
            return new(Settlement.Ack);
        });

        var raw = async () => await mesh.Nodes[0].SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "blob", Payload = new byte[(1024 * 1024) + 1] });
        var error = (await raw.Should().ThrowAsync<MessageTooLargeException>()).Which;
        error.Message.Should().Contain("1048577").And.Contain("1048576").And.Contain("PeerLinksOptions.MaxMessageBytes");

        // A body serialized by the link: the size is known only after serializing, and the error is the same.
        var settled = new TaskCompletionSource<Settlement>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bodyQueue = $"large.body-{Guid.NewGuid():N}";
        await mesh.Nodes[1].SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(bodyQueue), ConsumerGroup = bodyQueue }, (_, _) =>
        {
            Interlocked.Increment(ref handled);
            return new(Settlement.Ack);
        });
        await mesh.Nodes[0].SendAsync(bodyQueue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "text", Body = new string('x', 1024 * 1024) });
        var dead = await WaitForDeadLetterAsync(mesh.Nodes[0], bodyQueue).WaitAsync(Bound);
        dead.Should().Contain("PeerLinksOptions.MaxMessageBytes");
        handled.Should().Be(0);
    }

    [Fact]
    public void JsonSerializer_ReadsAPayloadInSegments_WithoutJoiningThem()
    {
        var serializer = new JsonMessageSerializer();
        var text = new string('y', 200_000);
        var writer = new SegmentWriter();
        serializer.Serialize(writer, new Blob(text, 7), typeof(Blob));
        var sequence = writer.Written;

        sequence.IsSingleSegment.Should().BeFalse();
        var back = (Blob)serializer.Deserialize(sequence, typeof(Blob));
        back.Should().Be(new Blob(text, 7));
        var envelope = new Envelope { MessageId = Guid.NewGuid(), PayloadSequence = sequence };
        envelope.PayloadLength.Should().Be(sequence.Length);
        envelope.Payload.ToArray().Should().Equal(sequence.ToArray());
        var bad = () => serializer.Deserialize(new ReadOnlySequence<byte>("{\"text\":1}"u8.ToArray()), typeof(Blob));
        bad.Should().Throw<MessageDeserializationException>();
    }

    private static async Task<string> WaitForDeadLetterAsync(PeerLinksTransport node, string queue)
    {
        while (true)
        {
            var dead = await node.PeekDeadLettersAsync(queue, 1);
            if (dead.Count > 0)
            {
                return dead[0].Reason ?? string.Empty;
            }

            await Task.Delay(20);
        }
    }

    public sealed record Blob(string Text, int Number);

    /// <summary>Records the runtime's allocation samples for the large-object heap (one at least every 100 KB allocated there).</summary>
    private sealed class LargeAllocationListener : EventListener
    {
        private readonly ConcurrentQueue<string> _allocations = new();
        private readonly TaskCompletionSource _live = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _proving;

        public Task Live => _live.Task;

        public int Count => _allocations.Count;

        public IEnumerable<string> Allocations => _allocations;

        public void Proof()
        {
            _proving = true;
            GC.KeepAlive(new byte[1024 * 1024]);
        }

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(eventSource, EventLevel.Verbose, (EventKeywords)0x1); // GC
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || eventData.Payload is null)
            {
                return;
            }

            var kind = eventData.PayloadNames!.IndexOf("AllocationKind") is var k and >= 0 ? Convert.ToInt32(eventData.Payload[k]) : -1;
            if (kind != 1)
            {
                return;
            }

            if (_proving)
            {
                _proving = false;
                _live.TrySetResult();
                return;
            }

            var type = eventData.PayloadNames.IndexOf("TypeName") is var t and >= 0 ? eventData.Payload[t] : "?";
            var size = eventData.PayloadNames.IndexOf("ObjectSize") is var s and >= 0 ? eventData.Payload[s] : "?";
            _allocations.Enqueue($"{type} of {size} bytes on thread {eventData.OSThreadId}");
        }
    }
}
