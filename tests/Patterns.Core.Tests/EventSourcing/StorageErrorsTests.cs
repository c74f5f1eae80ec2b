using System.Data.Common;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class StorageErrorsTests
{
    public static TheoryData<Exception> SpiOutcomes => new()
    {
        new WrongExpectedVersionException("s", ExpectedVersion.NoStream, 1),
        new StreamDeletedException("s"),
        new DuplicateEventException("s", Guid.NewGuid()),
        new DuplicateMessageException("c", "m"),
        new CheckpointConflictException("p", 1, 2),
        new OperationCanceledException(),
        new ArgumentException("bad"),
        new ObjectDisposedException("store"),
    };

    [Theory]
    [MemberData(nameof(SpiOutcomes))]
    public void Classify_TheSpisOwnOutcomes_ArePermanentWhateverTheDriverSays(Exception exception)
    {
        StorageErrors.Classify(exception, new Always(StorageErrorKind.Transient)).Should().Be(StorageErrorKind.Permanent);
        StorageErrors.IsRetryable(exception).Should().BeFalse();
    }

    [Fact]
    public void Classify_KernelRules_TimeoutsAndTransientDriverErrorsAreTransientTheRestPermanent()
    {
        StorageErrors.Classify(new TimeoutException()).Should().Be(StorageErrorKind.Transient);
        StorageErrors.Classify(new FakeDbException(transient: true)).Should().Be(StorageErrorKind.Transient);
        StorageErrors.Classify(new FakeDbException(transient: false)).Should().Be(StorageErrorKind.Permanent);
        StorageErrors.Classify(new InvalidOperationException()).Should().Be(StorageErrorKind.Permanent);
        StorageErrors.IsRetryable(new TimeoutException()).Should().BeTrue();
    }

    [Fact]
    public void Classify_DriverClassifier_DecidesForItsErrorsAndDefersWithNull()
    {
        StorageErrors.Classify(new FakeDbException(transient: false), new Always(StorageErrorKind.Conflict)).Should().Be(StorageErrorKind.Conflict);
        StorageErrors.Classify(new TimeoutException(), new Always(StorageErrorKind.Permanent)).Should().Be(StorageErrorKind.Permanent);
        StorageErrors.Classify(new TimeoutException(), new Always(null)).Should().Be(StorageErrorKind.Transient);
        StorageErrors.IsRetryable(new InvalidOperationException(), new Always(StorageErrorKind.Conflict)).Should().BeTrue();
    }

    [Fact]
    public void Classify_Null_Throws()
    {
        var act = () => StorageErrors.Classify(null!);

        act.Should().Throw<ArgumentNullException>();
    }

    [Fact]
    public void FromAppend_StampsConsecutiveVersionsAndPositionsAndCopiesOnlyWhenAsked()
    {
        var data = new byte[] { 1, 2 };
        var metadata = new byte[] { 3 };
        SerializedEvent[] events =
        [
            new(Guid.NewGuid(), "a", data, DateTimeOffset.UnixEpoch) { CorrelationId = "c", CausationId = "d", Metadata = metadata },
            new(Guid.NewGuid(), "b", data, DateTimeOffset.UnixEpoch),
        ];

        var shared = StoredEvent.FromAppend("s", 4, 10, events);
        var copied = StoredEvent.FromAppend("s", 4, 10, events, copyBuffers: true);
        data[0] = 9;

        shared.Select(e => (e.EventId, e.StreamId, e.Version, e.Position, e.EventType)).Should().Equal(
            (events[0].EventId, "s", 4L, 10L, "a"), (events[1].EventId, "s", 5L, 11L, "b"));
        shared[0].CorrelationId.Should().Be("c");
        shared[0].CausationId.Should().Be("d");
        shared[0].Metadata.ToArray().Should().Equal(3);
        shared[1].Metadata.IsEmpty.Should().BeTrue();
        shared[0].Data.Span[0].Should().Be(9, "without copying, the stored event shares the caller's buffer");
        copied[0].Data.Span[0].Should().Be(1);
        copied[0].Metadata.ToArray().Should().Equal(3);
    }

    private sealed class Always(StorageErrorKind? kind) : IStorageErrorClassifier
    {
        public StorageErrorKind? Classify(Exception exception) => kind;
    }

    private sealed class FakeDbException(bool transient) : DbException("driver error")
    {
        public override bool IsTransient => transient;
    }
}
