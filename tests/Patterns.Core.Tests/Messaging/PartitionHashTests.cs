using Patterns.Messaging;

namespace Patterns.Core.Tests.Messaging;

/// <summary>
/// The expected values are FNV-1a (32-bit) over the key's bytes, finished with the murmur3 fmix32 avalanche,
/// computed outside .NET: they must hold in every process, on every platform and in every version.
/// </summary>
public sealed class PartitionHashTests
{
    [Theory]
    [InlineData("order-1", 2449496732u, 2)]
    [InlineData("order-2", 2010665664u, 4)]
    [InlineData("customer-42", 2807919948u, 3)]
    [InlineData("", 2872998923u, 3)]
    [InlineData("\u00fcn\u00efc\u00f8d\u00e9", 146365199u, 4)]
    [InlineData("\U0001F600", 855877642u, 2)]
    public void String_HashesItsUtf8Bytes_SameConstantInEveryProcess(string key, uint hash, int partitionOf5)
    {
        PartitionHash.Of(key).Should().Be(hash);
        PartitionHash.OfString(key).Should().Be(hash);
        PartitionHash.Partition(key, 5).Should().Be(partitionOf5);
        PartitionHash.Partition(key, 8).Should().Be((int)(hash % 8));
    }

    [Fact]
    public void UnpairedSurrogate_HashesAsTheReplacementCharacter()
    {
        PartitionHash.Of("a\ud800b").Should().Be(3798084036u);
    }

    [Fact]
    public void Primitives_HashTheirLittleEndianBytes()
    {
        PartitionHash.Of(42).Should().Be(3841444160u);
        PartitionHash.Of(-1).Should().Be(650290018u);
        PartitionHash.Of(42L).Should().Be(4172014377u);
        PartitionHash.Of(true).Should().Be(90457223u);
        PartitionHash.Of('a').Should().Be(2448022055u);
        PartitionHash.Of(Guid.Parse("01234567-89ab-cdef-0123-456789abcdef")).Should().Be(1048604290u);
        PartitionHash.Of(DayOfWeek.Wednesday).Should().Be(3026542774u, "an enum hashes its underlying value");
    }

    [Fact]
    public void KeyTypedAsObject_HashesAsItsRuntimeType()
    {
        PartitionHash.Of<object>(42).Should().Be(PartitionHash.Of(42));
        PartitionHash.Of<object>("order-1").Should().Be(PartitionHash.Of("order-1"));
        PartitionHash.Of<object>(DayOfWeek.Wednesday).Should().Be(PartitionHash.Of(DayOfWeek.Wednesday));
        PartitionHash.Of<string?>(null).Should().Be(0u);
        PartitionHash.Partition<string?>(null, 7).Should().Be(0);
    }

    [Fact]
    public void Partition_OfLessThanOne_Throws()
    {
        var act = () => PartitionHash.Partition("k", 0);

        act.Should().Throw<ArgumentOutOfRangeException>();
    }
}
