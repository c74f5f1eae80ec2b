using System.Runtime.CompilerServices;

namespace Patterns.Etl.Tests;

/// <summary>
/// Equal keys must go to the same spill partition at every depth, whatever decides their equality: a record's own or
/// inherited <c>Equals</c>, its fields' types' equality, a caller's comparer, or the rules of floating point and decimal
/// numbers (equal values with different bits). Otherwise a spilling join or de-duplication silently loses matches.
/// </summary>
public sealed class SpillKeyEqualityTests
{
    private const double OtherNaN = 0.0 / 0.0;

    private static readonly double NegativeNaN = BitConverter.Int64BitsToDouble(unchecked((long)0xFFF8_0000_0000_0001));

    [Fact]
    public void Partition_RecordsWithEqualityWrittenInABaseOrDerivedRecord_KeepEqualKeysTogether()
    {
        SameEverywhere(new DerivedOfCustom("abc", 1), new DerivedOfCustom("ABC", 1));
        SameEverywhere(new CustomDerived(1, "abc"), new CustomDerived(1, "ABC"));
        SameEverywhere((1L, new DerivedOfCustom("abc", 1)), (1L, new DerivedOfCustom("ABC", 1)));
        SameEverywhere(new { Key = new CustomDerived(1, "abc") }, new { Key = new CustomDerived(1, "ABC") });
    }

    [Fact]
    public void Partition_RecordsWithFieldsOfCustomEquality_KeepEqualKeysTogether()
    {
        SameEverywhere(new Holder(new CaseName("abc"), 1), new Holder(new CaseName("ABC"), 1));
        SameEverywhere(new Holder2(new CaseStruct("abc"), new CaseRecordStruct("x")), new Holder2(new CaseStruct("ABC"), new CaseRecordStruct("X")));
        SameEverywhere((new CaseName("abc"), 2L), (new CaseName("ABC"), 2L));
        SameEverywhere(Tuple.Create(new CaseStruct("abc")), Tuple.Create(new CaseStruct("ABC")));
    }

    [Fact]
    public void Partition_TypesThatAreTuplesByInterfaceOnly_KeepEqualKeysTogether()
    {
        // A type of the program's own that implements ITuple keeps its own equality: its items are not what it compares.
        SameEverywhere(new CaseTuple("abc"), new CaseTuple("ABC"));
        SameEverywhere(new CaseTupleRecord("abc"), new CaseTupleRecord("ABC"));
        SameEverywhere((1L, new CaseTuple("abc")), (1L, new CaseTuple("ABC")));
    }

    [Fact]
    public void Partition_StringsUnderACallersComparer_KeepEqualKeysTogether()
    {
        var pairs = new[] { ("straße", "STRAßE"), ("straße", "strasse"), ("e\u0301", "\u00e9"), ("e\u0301", "E\u0301"), ("abc", "ABC") };
        foreach (var comparer in new[] { StringComparer.OrdinalIgnoreCase, StringComparer.InvariantCultureIgnoreCase, StringComparer.InvariantCulture, StringComparer.CurrentCultureIgnoreCase })
        {
            var equal = pairs.Where(p => comparer.Equals(p.Item1, p.Item2)).ToList();
            equal.Should().NotBeEmpty();
            foreach (var (a, b) in equal)
            {
                Same(a, b, comparer);
            }
        }

        var tupleComparer = new CaseTupleComparer();
        Same(("abc", 1L), ("ABC", 1L), tupleComparer);
        Same(new NamedKey("abc", 1), new NamedKey("ABC", 1), new NamedKeyComparer());
    }

    [Fact]
    public void Partition_NullableComponents_KeepEqualKeysTogether()
    {
        SameEverywhere(((long?)null, (string?)null), ((long?)null, (string?)null));
        SameEverywhere(((long?)5, (string?)"a"), ((long?)5, (string?)new string('a', 1)));
        SameEverywhere(new NullableKey(null, null, null), new NullableKey(null, null, null));
        SameEverywhere(new NullableKey(-0.0, 1.0m, 7), new NullableKey(0.0, 1.000m, 7));
        SameEverywhere((double?)-0.0, (double?)0.0);
        SameEverywhere((decimal?)1.0m, (decimal?)1.00m);
        SameEverywhere((long?)long.MaxValue, (long?)long.MaxValue);
    }

    [Fact]
    public void Partition_FloatingPointZerosAndNaNs_KeepEqualKeysTogether()
    {
        SameEverywhere(-0.0, 0.0);
        SameEverywhere(double.NaN, NegativeNaN);
        SameEverywhere(double.NaN, OtherNaN);
        SameEverywhere(-0.0f, 0.0f);
        SameEverywhere(float.NaN, BitConverter.Int32BitsToSingle(unchecked((int)0xFFC0_0001)));
        SameEverywhere((Half)(-0.0f), (Half)0.0f);
        SameEverywhere((-0.0, 1L), (0.0, 1L));
        SameEverywhere((double.NaN, 1L), (NegativeNaN, 1L));
        SameEverywhere(new FloatKey(-0.0, -0.0f, 1), new FloatKey(0.0, 0.0f, 1));
        SameEverywhere(new FloatKey(double.NaN, float.NaN, 1), new FloatKey(NegativeNaN, BitConverter.Int32BitsToSingle(unchecked((int)0xFFC0_0001)), 1));
        SameEverywhere(new { D = -0.0, L = 1L }, new { D = 0.0, L = 1L });
        SameEverywhere(Tuple.Create(-0.0, NegativeNaN), Tuple.Create(0.0, double.NaN));
    }

    [Fact]
    public void Partition_DecimalsOfDifferentScale_KeepEqualKeysTogether()
    {
        SameEverywhere(1.0m, 1.00m);
        SameEverywhere(0m, -0.000m);
        SameEverywhere((1.0m, 2L), (1.00m, 2L));
        SameEverywhere(new DecimalKey(1.0m, 2), new DecimalKey(1.00000m, 2));
        SameEverywhere(new { Price = 10.5m }, new { Price = 10.50m });
    }

    [Fact]
    public void Partition_DatesAndOffsets_KeepEqualKeysTogether()
    {
        var instant = new DateTime(2026, 1, 1, 12, 0, 0, DateTimeKind.Utc);
        SameEverywhere((instant, 1L), (DateTime.SpecifyKind(instant, DateTimeKind.Local), 1L));
        SameEverywhere(new DateKey(new DateTimeOffset(instant).ToOffset(TimeSpan.FromHours(3)), instant), new DateKey(new DateTimeOffset(instant), DateTime.SpecifyKind(instant, DateTimeKind.Unspecified)));
    }

    private static void SameEverywhere<TKey>(TKey a, TKey b) => Same(a, b, EqualityComparer<TKey>.Default);

    private static void Same<TKey>(TKey a, TKey b, IEqualityComparer<TKey> comparer)
    {
        comparer.Equals(a, b).Should().BeTrue("{0} and {1} are equal keys", a, b);
        for (var depth = 0; depth <= 8; depth++)
        {
            EtlSpillHash.Partition(a, comparer, depth, 1 << 20).Should().Be(EtlSpillHash.Partition(b, comparer, depth, 1 << 20), "{0} and {1} are equal keys (depth {2})", a, b, depth);
        }
    }

    public record CustomBase(string Name)
    {
        public virtual bool Equals(CustomBase? other) => other is not null && EqualityContract == other.EqualityContract && string.Equals(Name, other.Name, StringComparison.OrdinalIgnoreCase);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Name);
    }

    public sealed record DerivedOfCustom(string Name, long Id) : CustomBase(Name);

    public record PlainBase(long Id);

    public sealed record CustomDerived(long Id, string Name) : PlainBase(Id)
    {
        public bool Equals(CustomDerived? other) => base.Equals(other) && string.Equals(Name, other!.Name, StringComparison.OrdinalIgnoreCase);

        public override int GetHashCode() => HashCode.Combine(base.GetHashCode(), StringComparer.OrdinalIgnoreCase.GetHashCode(Name));
    }

    public sealed class CaseName(string value) : IEquatable<CaseName>
    {
        public string Value { get; } = value;

        public bool Equals(CaseName? other) => other is not null && string.Equals(Value, other.Value, StringComparison.OrdinalIgnoreCase);

        public override bool Equals(object? obj) => Equals(obj as CaseName);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Value);

        public override string ToString() => Value;
    }

    public readonly struct CaseStruct(string value) : IEquatable<CaseStruct>
    {
        public string Value { get; } = value;

        public bool Equals(CaseStruct other) => string.Equals(Value, other.Value, StringComparison.OrdinalIgnoreCase);

        public override bool Equals(object? obj) => obj is CaseStruct other && Equals(other);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Value);
    }

    public readonly record struct CaseRecordStruct(string Value)
    {
        public bool Equals(CaseRecordStruct other) => string.Equals(Value, other.Value, StringComparison.OrdinalIgnoreCase);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Value);
    }

    public sealed record Holder(CaseName Name, long Id);

    public sealed record Holder2(CaseStruct Name, CaseRecordStruct Code);

    public sealed class CaseTuple(string value) : ITuple, IEquatable<CaseTuple>
    {
        public int Length => 1;

        public object? this[int index] => value;

        public bool Equals(CaseTuple? other) => other is not null && string.Equals(value, (string?)other[0], StringComparison.OrdinalIgnoreCase);

        public override bool Equals(object? obj) => Equals(obj as CaseTuple);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(value);

        public override string ToString() => value;
    }

    public sealed record CaseTupleRecord(string Value) : ITuple
    {
        public int Length => 1;

        public object? this[int index] => Value;

        public bool Equals(CaseTupleRecord? other) => other is not null && string.Equals(Value, other.Value, StringComparison.OrdinalIgnoreCase);

        public override int GetHashCode() => StringComparer.OrdinalIgnoreCase.GetHashCode(Value);
    }

    public sealed record NamedKey(string Name, long Id);

    public sealed record NullableKey(double? D, decimal? M, long? L);

    public sealed record FloatKey(double D, float F, long L);

    public sealed record DecimalKey(decimal Price, long Id);

    public readonly record struct DateKey(DateTimeOffset At, DateTime When);

    private sealed class CaseTupleComparer : IEqualityComparer<(string, long)>
    {
        public bool Equals((string, long) x, (string, long) y) => string.Equals(x.Item1, y.Item1, StringComparison.OrdinalIgnoreCase) && x.Item2 == y.Item2;

        public int GetHashCode((string, long) obj) => HashCode.Combine(StringComparer.OrdinalIgnoreCase.GetHashCode(obj.Item1), obj.Item2);
    }

    private sealed class NamedKeyComparer : IEqualityComparer<NamedKey>
    {
        public bool Equals(NamedKey? x, NamedKey? y) => string.Equals(x?.Name, y?.Name, StringComparison.OrdinalIgnoreCase) && x?.Id == y?.Id;

        public int GetHashCode(NamedKey obj) => HashCode.Combine(StringComparer.OrdinalIgnoreCase.GetHashCode(obj.Name), obj.Id);
    }
}
